"""The node side: what runs on every machine that runs instances (hooks, VM wrapper, startd cron)."""
