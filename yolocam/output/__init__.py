"""Output: result objects, drawing, writing and reading output folders, the HTML gallery, progress."""
