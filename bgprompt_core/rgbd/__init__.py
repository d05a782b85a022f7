"""RGB-D beyond the paper: the sensor's noise model, alignment of relative depth to metres, fusion."""
