"""The job core: records, states, the store, and the worker loop. Knows nothing of HTTP."""
