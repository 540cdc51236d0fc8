module example.com/atomix/sdk

go 1.19
