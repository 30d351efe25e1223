"""Signing and backup encryption. Imported lazily: only the commands that sign, verify a
signature, back up or restore load ``cryptography``.

``InvalidSignature`` and the libraries' own errors are translated here, where they enter, into
``IntegrityError`` (a signature that does not hold) or ``InputRejected`` (a key or file that
cannot be used).
"""
