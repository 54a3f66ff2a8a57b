# nbconvert's settings for the course's HTML pages, which must read offline:
#   jupyter nbconvert --config etc/nbconvert/offline_html.py --to html NOTEBOOK
# The "offline" template leaves out what JupyterLab's page fetches from a CDN; MathJax is
# loaded from mathjax/ beside the page (the Makefile copies it there from jupyter-server-mathjax).
import os

c = get_config()  # noqa: F821 (defined by the config loader)
c.TemplateExporter.extra_template_basedirs = [os.path.dirname(os.path.abspath(__file__))]
c.HTMLExporter.template_name = "offline"
c.HTMLExporter.mathjax_url = "mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
