"""File formats: kmodel v4 (read/write) and TFLite (read)."""
