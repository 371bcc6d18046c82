"""The CaptchaAI / 2captcha protocol without I/O: codes, methods, answers, wire bodies.

Shared by the server and the client; imports nothing from either.
"""
