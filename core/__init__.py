"""ResNet Lab engine: models, summaries, probes, schedules, data, training. Never imports streamlit."""
