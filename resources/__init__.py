"""ModelDeck's bundled resources (fonts, icons); installed as the data-only package ``app.resources``."""
