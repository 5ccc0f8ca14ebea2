"""Gates: the math of each op, the wire protocol, and the actor that runs one gate."""
