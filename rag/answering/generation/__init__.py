"""Answer generation: prompts, context budgeting, LLM backends, citations and the answerer."""
