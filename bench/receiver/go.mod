module webhook-consumer/bench/receiver

go 1.22
