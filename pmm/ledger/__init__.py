"""The only code that touches SQLite: schema, migrations, appends, streaming reads, the chain."""
