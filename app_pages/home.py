"""Home: what waveviz is, a picture of real waves, and the pages."""
from waveviz.app.landing import render

render()
