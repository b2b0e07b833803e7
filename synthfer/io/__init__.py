"""Everything that writes dataset files: shard tars, manifest parts, markers, manifest, run.json."""
