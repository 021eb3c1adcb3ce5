"""The Faust shell around the pure core: app, agents, model feed, web views."""
