module github.com/rbee-hive/rbee-hive/httpmiddleware

go 1.26

require github.com/google/uuid v1.6.0
