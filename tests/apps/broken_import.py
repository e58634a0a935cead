raise RuntimeError("this app fails while being imported")
