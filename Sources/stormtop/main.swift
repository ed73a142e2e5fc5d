print("stormtop placeholder")
