"""pmm, the Persistent Mind Model: an AI's identity in one portable, verifiable SQLite file."""

__version__ = "0.1.0"
