"""Training: data feed, model factory and the fit loop for one model on one fold."""
