"""What students and instructors touch; only the notebooks and `python -m t2i` import it.

cli.py     `python -m t2i`: train, sample and evaluate every recipe; judge; inpaint; vary
play.py    the notebooks' Play panels (ipywidgets)
plot.py    image grids, animations, tables, PNG files
checks.py  each notebook's last cell: its numbers against their bars, one record
"""
