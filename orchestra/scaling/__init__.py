"""`orchestra scale`: accuracy, pass@n and majority@n against compute, from one pool of samples
(`sweep`), as a table, a CSV and a plot (`report`)."""
