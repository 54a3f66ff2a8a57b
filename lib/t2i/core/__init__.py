"""The machinery under every chapter; imports nothing else of the course.

runtime.py     profiles (smoke, cpu, gpu), data folder, device, bf16, atomic writes, warnings
checkpoint.py  the cache of trained models, keyed by their whole configuration
recipe.py      `Recipe`: every model declared once (config, build, train; load derived)
train.py       one training loop: AdamW, warm-up, interrupts; with its parts
resume.py      saving and resuming a run (model, EMA, optimizer, random state)
ema.py         the exponential moving average of the weights
liveplot.py    the live loss curve in a notebook
stats.py       rates with their n and 95% interval, and the tests between them
"""
