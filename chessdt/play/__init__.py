"""Play: the model as a move chooser, players, the arena that runs games, and the human front ends."""
