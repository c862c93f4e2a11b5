"""Control loops that run on the Raft leader: each a pure decision core and a thin I/O shell."""
