"""`gatemesh serve`: a live page where a pass can be watched, stepped through and broken.

`app` (the Starlette app and its WebSocket), `session` (what the page drives: targets, runs,
the pictures), `stepper` (the step-mode network actor that holds and delivers messages),
`targets` (where the gates run), `hosts` (gate host processes the server started),
`commands` (every request the page may send, validated), `static/` (the page itself).
"""
