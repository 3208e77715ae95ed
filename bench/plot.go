package bench

// writePlots writes the report's SVG plots into dir and returns their paths.
func writePlots(dir string, rep *Report) ([]string, error) { return nil, nil }
