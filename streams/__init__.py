"""The Faust app: topics, agents, tables, timers; thin glue around rules/."""
