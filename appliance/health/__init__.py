"""Health checks of the nodes behind each VIP; their results feed `plan()`.

`targets` (what to check, from the plan), `http` and `verdict` (pure: the request, the
answer's parser and what it means), `probe` (the epoll reactor that runs the checks),
`state` (rise/fall) and `checker` (the loop around them, for the daemon and
`appliance health check`).
"""
