"""Inference runtimes: incremental chat sessions, Streamo's per-second loop, STRIDE's denoising trigger."""
