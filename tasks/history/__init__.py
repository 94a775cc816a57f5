"""The demo and benchmark history: a deterministic, realistic past written as the service layer
would have written it. `generator.generate_history` is the door; `story` (the business's
arc), `rows` and `lifecycle` (one client), `crowd` (passes across clients) and `storage` (bulk
inserts) are its parts; `demo` loads and clears it as the `handoff demo` data."""
