"""Mining: jobs and solutions, the coordinator that splits the search across backends, the
template-to-job builder, and the one mining loop over a work source."""
