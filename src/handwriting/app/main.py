"""Entry point of the web app: ``streamlit run`` executes this file on every interaction.

Start it with ``handwriting app`` (which sets the folders, see :mod:`handwriting.app.config`).
It routes to the page scripts in ``views/``.
"""

import streamlit as st

st.set_page_config(page_title="Handwritten letters", page_icon=":material/draw:",
                   layout="wide")

page = st.navigation([
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/classify.py", title="Classify", icon=":material/draw:"),
    st.Page("views/models.py", title="Models", icon=":material/leaderboard:"),
    st.Page("views/about.py", title="About", icon=":material/info:"),
])
st.sidebar.caption("Handwritten letter recognition: 52 classes, A-Z and a-z.")
page.run()
