"""Input: image sources (paths, folders, globs, arrays), decoding, and the letterbox."""
