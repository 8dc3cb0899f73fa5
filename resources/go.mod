module github.com/rbee-hive/rbee-hive/resources

go 1.26

require (
	github.com/NVIDIA/go-nvml v0.13.4-1
	golang.org/x/sys v0.46.0
)

require github.com/google/uuid v1.6.0 // indirect
