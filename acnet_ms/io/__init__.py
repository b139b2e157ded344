"""Files: checkpoint reading and atomic writing."""
