"""Statistical baselines from statsforecast (MSTL, AutoETS, AutoTheta), as predictors scored beside
naive, seasonal naive and ridge on the same windows. The only module that imports statsforecast."""
