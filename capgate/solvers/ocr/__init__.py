"""Image-captcha recognition: the generic ddddocr model and trained per-family profiles."""
