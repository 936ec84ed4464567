"""Streamlit helpers shared by the pages. Everything here may import streamlit; core/ may not."""
