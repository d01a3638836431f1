"""Pictures (matplotlib, imported lazily by whoever needs them; never by ``import convbridge``)."""
