"""ModelDeck's memory estimates checked against llama.cpp (issue 10, item 4)."""
