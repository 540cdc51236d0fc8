module cloud.google.com/go/compute/metadata
