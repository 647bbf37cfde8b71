"""Chat between users: end-to-end encrypted messages, receipts, history, offline delivery."""
