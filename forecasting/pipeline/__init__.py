"""The recipes that combine the layers: the train pipeline's steps, the search, the backtest command."""
