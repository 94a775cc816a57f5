"""The risk register: triggers evaluated over the sweep snapshot (triggers), the facts they read
beyond it (facts), the writes (register) and what people read (views)."""
