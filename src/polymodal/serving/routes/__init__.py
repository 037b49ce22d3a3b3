"""One router per resource: predictions, explanations, schema, health, metrics, the page."""
