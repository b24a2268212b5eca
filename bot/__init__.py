"""supportbot: turns a support@ mailbox into contract-aware support."""
