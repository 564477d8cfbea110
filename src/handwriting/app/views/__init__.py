"""The app's page scripts (Home, Classify, Models, About).

Each file is a Streamlit script that :mod:`handwriting.app.main` runs through ``st.navigation``;
they draw the page when executed and are not meant to be imported.
"""
