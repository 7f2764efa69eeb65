"""Speculative decoding: the draft-and-verify algorithm (decoding.py) and one plugin per drafter."""
