"""What every front door and the upstream layer share, independent of any client's wire format.

- `chat`: the typed internal form of a Chat Completions request and chunk (the hub every door translates to/from).
- `errors`: neutral error kinds (`ErrorKind`) and `ProxyError`, which each door renders in its own format.
"""
