"""The shapes world of notebook 00, which every chapter trains and is measured on.

shapes.py      scenes: colours, shapes, sizes, cells; sampling and rendering
tokenizer.py   caption words <-> ids (one vocabulary for every text model)
grammar.py     the captions: written from a scene (full or partial), parsed back into facts
datasets.py    scenes, renders and captions as cached datasets
prompts.py     the course's caption tokenizer, the empty caption, captioned training scenes
classes.py     the 18 colour-shape classes of notebook 05 and the label sets built on them
judge.py       reads an image and says which facts of a caption hold
junk.py        images the judge must refuse (its adversarial test set)
typography.py  words written into images (the typographic attack)
measures.py    the judge's tables every chapter reports (captions, labels), PSNR
"""
