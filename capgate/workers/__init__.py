"""Workers: the built-in OCR worker and the plumbing any worker uses."""
