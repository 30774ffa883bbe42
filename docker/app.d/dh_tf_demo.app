# Deephaven application mode (-Ddeephaven.application.dir=/app.d): runs dh_tf_demo_data.py at server
# start, which writes/reads the demo table `dh_tf_demo` and copies the examples into the IDE.
type=script
scriptType=python
enabled=true
id=io.github.dh_tf.demo
name=dh_tf demo
file_0=dh_tf_demo_data.py
