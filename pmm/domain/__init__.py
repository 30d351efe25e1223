"""Pure domain: event kinds, canonical encoding and projections. No I/O, no clock."""
