"""What a run leaves behind (torch-free): results, baselines and their updates, diffs, reports, plots."""
